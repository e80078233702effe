"""The whole system as an operator runs it: real `runstate` processes, real targets, real
receivers, real PostgreSQL and Redis."""
