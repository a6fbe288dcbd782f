"""klwatch reference RLHF trainer: PPO with a per-token KL penalty (see docs/trainer.md)."""
