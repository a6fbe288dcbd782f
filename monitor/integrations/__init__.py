"""Trainer integrations that write klwatch run directories (see monitor.integrations.hf)."""
