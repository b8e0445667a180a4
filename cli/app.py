def main() -> None:  # placeholder until the CLI lands
    raise SystemExit("sarsearch: not built yet")
