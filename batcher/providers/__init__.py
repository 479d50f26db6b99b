"""Provider adapters. Each module knows one provider's wire format; nothing else does."""
