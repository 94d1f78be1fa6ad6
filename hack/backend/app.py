# The seed's Flask app, as the walkthrough writes it. Its extraction lost the route
# decorators and the app.run(...) call; they are restored here, nothing else is changed:
# `/` answers "Server : <hostname> @ <ip>" (or "Welcome to <url> @ <ip>" with -u) and
# `/health` answers "healthy!"; the app listens on all addresses on the -p port.
#
# make demo runs two copies per port on two loopback addresses; --bind (our addition, for
# running several "instances" on one machine) picks the address, and the reported ip is it.
import argparse
import socket
import sys

from flask import Flask


def check_arg(args=None):
    parser = argparse.ArgumentParser(
        description='Simple Flask app to test load balancer service')
    parser.add_argument('-p', '--port',
                        help='port for the web server to bind to')
    parser.add_argument('-u', '--url',
                        help='url for the server to respond with')
    parser.add_argument('--bind', default='',
                        help='address to listen on (default: all)')
    parser.add_argument('--name', default=None,
                        help='host name to report (default: this host)')
    results = parser.parse_args(args)
    return (results.port, results.url, results.bind, results.name)


server_port, server_url, bind, name = check_arg(sys.argv[1:])
host_name = name or socket.gethostname()
host_ip = bind or socket.gethostbyname(host_name)

app = Flask(__name__)


@app.route('/')
def hello():
    if server_url is None:
        return "Server : {} @ {}".format(host_name, host_ip)
    return "Welcome to {} @ {}".format(server_url, host_ip)


@app.route('/health')
def health():
    return "healthy!"


if __name__ == '__main__':
    app.run(host=bind, port=int(server_port))
