"""ui/: the command line, the page's handlers, the Outputs tab, the API and the server."""
