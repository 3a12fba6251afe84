container "bad" {
  state    = "paused"
  hostname = "-bad-.example.com"
  cpu {
    count = 2
    limit = "300%"
    units = 3
  }
  memory {
    ram = true
  }
  disk {
    size = "1M"
  }
  network {
    interface "this-name-is-too-long0" {
      ip  = ["192.0.2.300/24", "198.51.100.7/33"]
      mac = "01:00:5e:00:00:01"
      mtu = 40
    }
  }
  sysctl = { "kernel.panic" = "1" }
  templates = ["../etc"]
  root      = "/vz/root/../../etc"
  frobnicate = 1
}
