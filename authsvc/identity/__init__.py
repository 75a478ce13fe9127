"""Who is calling: principals, credentials (API keys, client certificates), roles and tenants.

The server's interceptor turns a request's credential into a `Principal`;
`roles.METHODS` says which roles may call which method and in which scope.
Nothing here knows about gRPC.
"""
