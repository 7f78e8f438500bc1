"""Sending domains: the domains a workspace sends From, with their DKIM keys, the DNS records to publish, the check
of those records, the keyring that signs mail with them, and the rule that From domains be verified."""
