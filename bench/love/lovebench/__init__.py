"""A LOVE-manager-style relay (Django Channels over channels_redis) for
`meridian bench love`: written for the benchmark from the published facts
of LOVE's protocol, not copied from LOVE."""
