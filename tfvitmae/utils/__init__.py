"""Plain-Python helpers under every other subpackage: atomic file writes and
argument checks. They import nothing else of tfvitmae."""

__all__: list[str] = []
