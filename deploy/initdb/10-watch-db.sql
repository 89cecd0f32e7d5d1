-- Runs once, when the PostgreSQL volume is created: the warehouse database next to Dagster's.
CREATE DATABASE watch;
