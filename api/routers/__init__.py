"""One router per resource; each route parses, authorizes, calls the vault and shapes the reply."""
