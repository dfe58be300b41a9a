# The proxy image docker-compose.yml builds. The full Python image: it has the C compiler that
# builds the compiled rewriting loop (on -slim the proxy works, rewriting in pure Python).
FROM python:3.11
COPY . /src
RUN pip install --no-cache-dir '/src[redis,postgres,fast]' \
    && useradd --system --home-dir /var/lib/libproxy --shell /usr/sbin/nologin libproxy \
    && mkdir -p /var/lib/libproxy && chown libproxy /var/lib/libproxy
USER libproxy
WORKDIR /var/lib/libproxy
# Exec form: the proxy is PID 1 and receives the container's SIGTERM and SIGHUP itself.
ENTRYPOINT ["libproxy"]
CMD ["serve", "--config", "/src/config/docker.toml"]
