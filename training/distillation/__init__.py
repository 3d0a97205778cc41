"""Building blocks of cross-modal distillation (regions, features, outputs, adaptive weights, config);
`training.distill.DistillationLoss` puts them together."""
