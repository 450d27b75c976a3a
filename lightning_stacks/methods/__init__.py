"""The seeds' other methods as pipeline stages (SPEC section 4), one module each:
:mod:`.group_sparsity` (Alvarez & Salzmann), :mod:`.layer_sparsity` (Hebiri & Lederer) and
:mod:`.stable_units` (Kumar, Serra & Ramalingam)."""
