"""The scenario's modules run in file order, except test_to_fleet.py: it turns the host into a fleet, so it runs
after every other check of the single host."""

LAST = ("test_to_fleet.py",)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name in LAST)  # stable: the others keep their order
