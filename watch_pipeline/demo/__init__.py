"""The synthetic demo organisation: realistic Google Workspace and Slack audit logs with labelled stories."""

from watch_pipeline.demo.generator import DemoOrg, generate_org

__all__ = ["DemoOrg", "generate_org"]
