"""Seeds for the random sub-layers of a layer (dropouts, drop path)."""

import zlib


def sub_seed(seed, name):
    """A seed for the sub-layer `name` of a layer seeded with `seed`.

    Distinct names give distinct, repeatable seeds: two dropouts of the same
    shape sharing one seed would draw identical masks at every step.
    `None` (unseeded) stays `None`.
    """
    if seed is None:
        return None
    return zlib.crc32(f"{seed}/{name}".encode()) % (2**31 - 1)
