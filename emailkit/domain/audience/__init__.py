"""The audience: subscribers, lists and subscriptions, opt-in, segments, imports and exports, the preference
centre, suppressions, GDPR requests, and who a campaign targets."""
