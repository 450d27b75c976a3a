"""The seeds' other methods as pipeline stages (SPEC section 4), one module each:
:mod:`.group_sparsity` (Alvarez & Salzmann)."""
