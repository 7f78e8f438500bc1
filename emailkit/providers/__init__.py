"""Email providers implementing :class:`emailkit.domain.sending.EmailProvider`; see ``registry``."""
