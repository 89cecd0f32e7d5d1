"""Dagster resources for the warehouse and the settings file."""



import dagster as dg
from pydantic import PrivateAttr

from watch_pipeline.settings import Settings, load_settings
from watch_pipeline.warehouse import Warehouse, open_warehouse


class WarehouseResource(dg.ConfigurableResource):
    """DuckDB file (default `$WATCH_HOME/warehouse.duckdb`) or PostgreSQL when `url` / WATCH_WAREHOUSE_URL is set."""

    url: str | None = None
    path: str | None = None
    _wh: Warehouse | None = PrivateAttr(default=None)

    def get(self) -> Warehouse:
        if self._wh is None:
            self._wh = open_warehouse(url=self.url, path=self.path)
        return self._wh

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._wh is not None:
            self._wh.close()
            self._wh = None


class SettingsResource(dg.ConfigurableResource):
    """The YAML settings file: `path`, else $WATCH_CONFIG, else the defaults."""

    path: str | None = None

    def load(self) -> Settings:
        return load_settings(self.path)
