"""HTTP routers: thin, each parses input, calls one service function and shapes the answer."""
