"""The Ray actors: thin holders of state around the pure code (one module each)."""
