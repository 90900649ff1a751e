"""The service's own database: connection lanes and the schema of every table."""
