"""User-agent parsing: families, Slack clients, empty UAs, one parse per distinct string."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from watch_pipeline.core import useragent
from watch_pipeline.core.useragent import UA_COLUMNS, parse_user_agents

SLACK_DESKTOP_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
                     "Slack/4.33.90 Chrome/114.0.5735.134 Electron/25.2.0 Safari/537.36 MacAppStore/22.5.0 "
                     "Slack_SSB/4.33.90")
SLACK_DESKTOP_WIN = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Slack/4.35.126 "
                     "Chrome/118.0.5993.159 Electron/27.1.0 Safari/537.36 Sonic Slack_SSB/4.35.126")
SLACK_IOS = "com.tinyspeck.chatlyio/23.07.10 (iPhone; iOS 16.5.1; Scale/3.00)"
SLACK_IPAD = "com.tinyspeck.chatlyio/23.07.10 (iPad; iOS 16.5; Scale/2.00)"
SLACK_ANDROID = "Slack/23.07.10.0 (Android 13; Pixel 7; okhttp)"
SLACK_ANDROID_2 = "com.Slack/23.07.10.0 (Linux; Android 13; SM-G991B)"
SLACK_API = "Slack/1.0 (Slack API client)"
CHROME_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/103.0.0.0 Safari/537.36")


@pytest.mark.parametrize("ua, browser, major, os_family, device", [
    (SLACK_DESKTOP_MAC, "Slack Desktop Client", "4", "Mac OS X", "Mac"),
    (SLACK_DESKTOP_WIN, "Slack Desktop Client", "4", "Windows", "Other"),
    (SLACK_IOS, "Slack iOS App", "23", "iOS", "iPhone"),
    (SLACK_IPAD, "Slack iOS App", "23", "iOS", "iPad"),
    (SLACK_ANDROID, "Slack Android App", "23", "Android", None),
    (SLACK_ANDROID_2, "Slack Android App", "23", "Android", None),
    (SLACK_API, "Slack Client", "1", "Other", "Other"),
    (CHROME_MAC, "Chrome", "103", "Mac OS X", "Mac"),
])
def test_families(ua, browser, major, os_family, device):
    row = parse_user_agents(pd.Series([ua])).iloc[0]
    assert row.ua_browser == browser and row.ua_browser_major == major and row.ua_os == os_family
    if device is not None:
        assert row.ua_device == device
    assert row.ua_device_key == f"{browser}|{os_family}|{row.ua_device}"


def test_device_key_is_version_free():
    newer = SLACK_DESKTOP_MAC.replace("4.33.90", "4.36.1").replace("10_15_7", "14_1")
    a, b = parse_user_agents(pd.Series([SLACK_DESKTOP_MAC, newer]))["ua_device_key"]
    assert a == b
    ios_a, ios_b = parse_user_agents(pd.Series([SLACK_IOS, SLACK_IOS.replace("23.07.10", "24.01.1")]))["ua_device_key"]
    assert ios_a == ios_b and "23" not in ios_a


def test_empty_and_missing_ua_give_empty_strings():
    out = parse_user_agents(pd.Series(["", None, "   "], index=[5, 6, 7]))
    assert list(out.index) == [5, 6, 7]
    assert (out[list(UA_COLUMNS)] == "").all().all()


def test_unknown_ua_is_other():
    row = parse_user_agents(pd.Series(["zzz-unknown-agent"])).iloc[0]
    assert (row.ua_browser, row.ua_os, row.ua_device) == ("Other", "Other", "Other")


def test_one_parse_per_distinct_string(monkeypatch):
    seen = []
    real = useragent.parse_one.__wrapped__
    monkeypatch.setattr(useragent, "parse_one", lambda ua: seen.append(ua) or real(ua))
    uas = pd.Series([CHROME_MAC] * 100 + [SLACK_IOS] * 50 + [None] * 3)
    out = parse_user_agents(uas)
    assert sorted(seen) == sorted([CHROME_MAC, SLACK_IOS, ""])  # "" is the row for missing UAs
    assert (out["ua_browser"] == "Chrome").sum() == 100 and (out["ua_browser"] == "").sum() == 3


def _walk_user_agents(node, found):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("ua", "user_agent") and isinstance(value, str):
                found.append(value)
            else:
                _walk_user_agents(value, found)
    elif isinstance(node, list):
        for item in node:
            _walk_user_agents(item, found)


def test_real_slack_log_user_agents(peer_data):
    """Every UA in real Slack log samples parses to a known browser family, never 'Other'."""
    base = peer_data / "saas-logs"
    docs = [json.loads((base / "api-examples/slack_team_accessLogs_response.json").read_text())]
    log = base / "elastic-integrations/packages/slack/data_stream/audit/_dev/test/pipeline/test-audit.log"
    docs += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    found: list[str] = []
    for doc in docs:
        _walk_user_agents(doc, found)
    assert any("chatlyio" in ua for ua in found) and any(ua.startswith("SlackWeb") for ua in found)
    out = parse_user_agents(pd.Series(found))
    assert not (out["ua_browser"] == "Other").any(), out[out["ua_browser"] == "Other"]
    families = dict(zip(found, out["ua_browser"]))
    assert {families[ua] for ua in found if "chatlyio" in ua} == {"Slack iOS App"}
    assert families[next(ua for ua in found if ua.startswith("SlackWeb Mozilla/5.0 (iPhone"))] == "Mobile Safari"
