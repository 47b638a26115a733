import statistics


def median_of_means(groups):
    """The median of the means of the non-empty lists in groups."""
