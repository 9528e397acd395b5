"""Input formats: an inbound mail → a :class:`~bridge.model.Draft`. Pure."""
