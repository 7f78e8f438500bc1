"""Email providers implementing :class:`emailkit.domain.ports.provider.EmailProvider`; see ``registry``."""
