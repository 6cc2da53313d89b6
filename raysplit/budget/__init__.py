"""Budget schedules (pure) and the policies that move clients through them."""
