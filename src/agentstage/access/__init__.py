"""Who is asking and what they may do: principals, the one permission table, the audit log.

Doors import this package to authenticate a request and check its permission; it imports only
``core/``, ``errors`` and ``settings`` — never the runtime or a door — so every door (HTTP,
WebSocket, gRPC, CLI) shares one definition of identity and authority.
"""
