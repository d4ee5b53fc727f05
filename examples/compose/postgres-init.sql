-- Top statements for the PostgreSQL dashboard's "Slow statements" panel.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
