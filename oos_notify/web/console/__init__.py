"""The console for the manufacturer's team: sign-in, the live board, incidents, centers,
reports, the incident record and the dev mailbox, as server-rendered pages under ``/console``."""
