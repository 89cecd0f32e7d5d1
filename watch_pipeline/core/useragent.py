"""User-agent parsing with ua-parser (uap-core regexes), taught Slack's own client user agents.

uap-core already knows the Slack desktop app ("Slack Desktop Client") and Slackbot, but reads the iOS app
(``com.tinyspeck.chatlyio/...``) as a WKWebView, the Android app as okhttp/Android and a bare ``Slack/x.y`` API
client as nothing. A few matchers placed ahead of uap-core's fix that.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import ua_parser
from ua_parser import Parser
from ua_parser.loaders import load_builtins, load_lazy_builtins
from ua_parser.matchers import UserAgentMatcher

from watch_pipeline.core.frames import take_strings

UA_COLUMNS = ("ua_browser", "ua_browser_major", "ua_os", "ua_device", "ua_device_key")
OTHER = "Other"  # ua-parser's name for "no rule matched"

# group 1 is the family placeholder (replaced by the fixed family), groups 2.. the version.
SLACK_UA_MATCHERS = [
    UserAgentMatcher(r"^com\.tinyspeck\.(chatlyio)/(\d+)(?:\.(\d+))?(?:\.(\d+))?", "Slack iOS App"),
    UserAgentMatcher(r"^(?:com\.)?(Slack)/(\d+)(?:\.(\d+))?(?:\.(\d+))?[^ ]* \([^)]*Android", "Slack Android App"),
    UserAgentMatcher(r"^(?:com\.)?(Slack)/(\d+)(?:\.(\d+))?(?:\.(\d+))?", "Slack Client"),
]


def _build_parser() -> Parser:
    fast = ua_parser.RegexResolver is not None or ua_parser.Re2Resolver is not None
    ua, os_, device = load_lazy_builtins() if fast else load_builtins()
    matchers = (SLACK_UA_MATCHERS + list(ua), list(os_), list(device))
    # no ua-parser cache: parse_one() has its own, and callers already deduplicate per batch
    return Parser(ua_parser.BestAvailableResolver(matchers))


_PARSER: Parser | None = None


def _parser() -> Parser:
    global _PARSER
    if _PARSER is None:
        _PARSER = _build_parser()
    return _PARSER


@lru_cache(maxsize=100_000)
def parse_one(ua: str) -> tuple[str, str, str, str, str]:
    """(browser family, browser major, OS family, device family, device key) of one user agent.

    An empty UA (Google sends none) gives five ''; an unrecognised one gives "Other" families.
    """
    ua = ua.strip()
    if not ua:
        return ("", "", "", "", "")
    result = _parser().parse(ua)
    browser = result.user_agent.family if result.user_agent else OTHER
    major = (result.user_agent.major or "") if result.user_agent else ""
    os_family = result.os.family if result.os else OTHER
    device = result.device.family if result.device else OTHER
    return (browser, major, os_family, device, f"{browser}|{os_family}|{device}")


def parse_user_agents(uas: pd.Series) -> pd.DataFrame:
    """The ``ua_*`` enrichment columns for ``uas``, indexed like it; one parse per distinct string."""
    codes, uniques = pd.factorize(uas, use_na_sentinel=True)
    parsed = [parse_one(str(u)) for u in uniques] + [parse_one("")]  # last row: NA user agents
    take = np.where(codes < 0, len(parsed) - 1, codes)
    out = pd.DataFrame({c: take_strings([p[i] for p in parsed], take)  # per-distinct strings, gathered in C
                        for i, c in enumerate(UA_COLUMNS)}, index=uas.index)
    out.attrs["distinct"] = len(uniques)  # distinct non-missing user agents, for the caller's metadata
    return out
