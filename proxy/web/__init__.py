"""The proxy's own pages: sign-in, database list, messages, and the routes that serve them."""
