def main():  # placeholder replaced below
    pass
