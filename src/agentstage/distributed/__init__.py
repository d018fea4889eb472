"""The scale-out parts: a PostgreSQL job queue (procrastinate), live events over Redis Streams,
and the ``agent worker`` process. They implement ``runtime/distribution.py``'s protocols and are
wired like a store (``runtime/wiring.py``); nothing above the runtime knows they exist."""
