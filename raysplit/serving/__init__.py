"""Split inference served: the tail as a batched Ray Serve deployment, the head and the
compression module on clients, each request with its own budget.

``model`` (what a run directory serves and its budgets), ``tail`` (the server's half, no
Ray), ``client`` (an edge client: head, link, budget choice), ``deadline`` (how much of a
message a link delivers in time), ``app`` (the Ray Serve deployment), ``emulate`` (emulated
clients as Ray actors).
"""
