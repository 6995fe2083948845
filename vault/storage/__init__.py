"""Storage: engines with the durability settings, the schema, migrations."""
