"""Worker-ID leases for Snowflake minting (port + adapters + pure minting rules)."""
