"""Split training without Ray: the two halves, their objectives and optimizer, the
methods as plans, and the one step loop that the local trainer and the cluster share."""
