"""Experiment configs: `default` is the 2015 CIFAR-10 recipe, the others override parts of it."""
