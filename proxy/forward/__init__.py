"""Everything about talking to vendors: the outbound header policy, the per-session vendor
cookie jar, the upstream client, and the proxying handler that ties them together."""
