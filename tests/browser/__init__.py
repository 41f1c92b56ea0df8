"""The page in a real browser (Chromium through Playwright)."""
