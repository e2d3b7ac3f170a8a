"""The client side of delayed events, in parts that :mod:`nio_delayed.mixin` assembles.

- :mod:`.state`: what one client keeps between calls;
- :mod:`.session`: the HTTP session, behind a narrow transport interface tests can replace;
- :mod:`.request_path`: the one way a call reaches the server and comes back typed;
- :mod:`.decision` and :mod:`.negotiation`: which dialect and listing a server has (the pure
  decision, and the I/O that gathers its inputs);
- :mod:`.encryption`: messages for encrypted rooms;
- :mod:`.calls`: the public calls, each over the one request path;
- :mod:`.sent`: knowing a delayed event was sent, from the client's sync.

Private: the public API is the mixin's.
"""
