"""Pure parsers from bytes to Records: nginx and HAProxy logs, syslog framing, TCP reassembly."""
