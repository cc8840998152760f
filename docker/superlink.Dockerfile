# The aggregation side: Flower's SuperLink image. The ServerApp itself arrives
# inside the Flower App bundle that `flwr run` submits; nothing of ours is needed here.
ARG FLWR_VERSION=1.41.0
FROM flwr/superlink:${FLWR_VERSION}
# TLS material is mounted at run time (see compose.yaml), never baked in.
ENTRYPOINT ["flower-superlink"]
# One HTTPS port serves the Fleet, Control and ServerAppIo APIs (Flower 1.41).
EXPOSE 9091
CMD ["--host", "0.0.0.0", "--port", "9091", "--ssl-ca-certfile", "/certs/ca.crt", \
     "--ssl-certfile", "/certs/server.pem", "--ssl-keyfile", "/certs/server.key", \
     "--enable-supernode-auth"]
