"""The pure core: states, ports, exit codes, data values and the checkpoint codec.

Nothing in this package performs IO or imports asyncio, anyio or sqlite; it is tested with plain
function calls.  Storage, runtime and edges build on it, never the other way round.
"""
