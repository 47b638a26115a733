import sys

sys.path.insert(0, '.')
from calc import add  # noqa: E402

assert add(2, 3) == 5, add(2, 3)
print('tests ok')
