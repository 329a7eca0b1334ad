"""The test suite. Its servers take their ports from ``tests.ports``: the package puts that in
place of the embedded mail server's ``free_port`` before any test module imports it."""

from oos_notify.delivery import capture
from tests import ports

capture.free_port = ports.free_port
