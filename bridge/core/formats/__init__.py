"""Input formats: an inbound mail → a :class:`~bridge.core.model.Draft`. Pure."""
