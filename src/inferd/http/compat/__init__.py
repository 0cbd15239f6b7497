"""The replaced systems' routes (S0-S4), mapped onto the core."""
