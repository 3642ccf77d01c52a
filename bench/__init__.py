"""The Locust benchmark suite, its baseline server and `sluice bench`: see README.md here."""
