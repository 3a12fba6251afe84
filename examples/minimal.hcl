# The smallest useful container: an OS template, some memory and one
# routed address. Everything else takes its default.
container "web01" {
  ostemplate = "debian-12-x86_64"
  memory { ram = "512M" }
  network {
    interface "eth0" { ip = ["192.0.2.10/32"] }
  }
}
