

print(median_of_means([[1, 2, 3], [4, 5], [10]]))
