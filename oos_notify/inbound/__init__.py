"""Mail that comes back: bounces, automatic replies and replies, read from a mailbox or taken
over SMTP, and what each does to its notification and incident."""
